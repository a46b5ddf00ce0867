/*  imgp_curve — CURVE keys on the links between imgpipe hosts, with czmq's
    zcert (key files) and zauth (who may connect).

    Why: without keys anyone who can reach the broker's ports is a resizer
    (it receives uploads and may answer them) or a frontend. With keys the
    broker is a CURVE server on every endpoint and only peers whose public
    certificate sits in the clients directory get through; resizers and
    frontends are CURVE clients that also check the broker's key. The
    ZAP handler (zauth) is what refuses unknown keys: a CURVE server with
    no ZAP handler takes any client that knows its public key, so the
    server object starts one and keeps it for its lifetime.

    Key files are czmq certificates: PATH holds the public key, PATH_secret
    holds both (mode 0600). --curve-secret names the _secret file,
    --curve-server and the clients directory hold public files.

    Every call is NULL-safe on `self`, so a program without keys calls the
    same code and gets plain sockets.

    Never: log or print a secret key; start two server objects in one
    process (zauth is one per ZeroMQ context, it binds a fixed endpoint).
*/
#ifndef IMGP_CURVE_H_INCLUDED
#define IMGP_CURVE_H_INCLUDED

#include <czmq.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct _imgp_curve_t imgp_curve_t;

//  The ZAP domain every imgpipe CURVE server announces.
#define IMGP_CURVE_DOMAIN "imgpipe"

//  The broker side: load our own certificate from `secret_file` (a _secret
//  file) and start zauth allowing the public certificates in `clients_dir`
//  (files added or removed later are seen at the next handshake; a client
//  refused before stays out until it connects again: libzmq 4.3 does not
//  retry a connection whose handshake was refused). Returns
//  NULL with the reason logged (imgp_log ERROR) when a file is missing,
//  holds no secret key, or zauth did not start.
imgp_curve_t *imgp_curve_server_new (const char *secret_file, const char *clients_dir);

//  A resizer or frontend: our own certificate from `secret_file` and the
//  broker's public key from `server_public_file`. Returns NULL with the
//  reason logged.
imgp_curve_t *imgp_curve_client_new (const char *secret_file,
                                     const char *server_public_file);

//  Stops zauth (server) and every watch. Safe on NULL and twice.
void imgp_curve_destroy (imgp_curve_t **self_p);

//  Make `sock` a CURVE server (server object: own keys, ZAP domain
//  IMGP_CURVE_DOMAIN) or client (own keys + the server's public key).
//  Call before zsock_bind / zsock_connect, from the thread that owns sock.
//  NULL self: nothing, returns 0 (a plain socket). Returns 0 or -1.
int imgp_curve_apply (imgp_curve_t *self, zsock_t *sock);

//  Watch `sock` for handshakes that fail and log them, at most once per
//  socket name and reason a minute (the next line says how many were held
//  back): on a server "WARN event=refused reason=unknown_key socket=NAME"
//  (a key not in the clients dir: always seen; reason=no_curve for a
//  plain peer, reason=bad_handshake for one with a wrong server key; a
//  plain peer is not always seen: both ends fail at the greeting and a TCP
//  reset can beat the bytes libzmq would read); on a client
//  "WARN event=refused_by_server reason=unknown_key socket=NAME".
//  The watching runs in a thread of this object; the caller polls
//  nothing. Call from the thread that owns `sock`, before bind/connect
//  (so the first peer is seen); `name` is copied. The watch ends when
//  sock is destroyed or when this object is. NULL self: nothing, 0.
//  Returns 0 or -1.
//  libzmq keeps ONE monitor per socket (a second zmq_socket_monitor ends
//  the first): a socket that has a monitor of its own must not be watched
//  here; use IMGP_CURVE_EVENTS and imgp_curve_event instead.
int imgp_curve_watch (imgp_curve_t *self, zsock_t *sock, const char *name);

//  For a socket whose owner reads its own libzmq monitor: add
//  IMGP_CURVE_EVENTS to that monitor's events and pass every event read
//  (its 16-bit number and 32-bit value) here, with the socket's name.
//  A refusal is counted and logged as imgp_curve_watch does, under the
//  same per-name limit; returns true when `event` was one. Any thread.
//  NULL self: false.
#define IMGP_CURVE_EVENTS (ZMQ_EVENT_HANDSHAKE_FAILED_AUTH | ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL)
bool imgp_curve_event (imgp_curve_t *self, const char *name, int event, uint32_t value);

//  How many peers the watched sockets have refused (server) or been
//  refused by (client) for their key since this object was made, counted
//  before the once-a-minute limit of the log (for tests and metrics).
//  Any thread. NULL self: 0.
size_t imgp_curve_refusals (imgp_curve_t *self);

//  True when `endpoint` cannot be reached from another host: ipc://,
//  inproc://, tcp://127.x.x.x:PORT, tcp://localhost:PORT, tcp://[::1]:PORT.
//  Anything else (tcp://*:P, tcp://0.0.0.0:P, an interface name, another
//  address) is not local. The broker refuses to bind a non-local endpoint
//  without keys unless told --insecure.
bool imgp_curve_endpoint_local (const char *endpoint);

//  On a CURVE server, zauth (czmq 4.2.1) vouches for each allowed peer:
//  every message from it carries libzmq properties "User-Id" = its public
//  key (Z85, 40 characters) and one per metadata field of its certificate
//  in the clients dir; keygen writes IMGP_CURVE_KEY_NAME = the file's
//  base name ("resizer-h2"). Read them with zframe_meta (frame,
//  "User-Id") on any frame of the message (the codec's to do).
#define IMGP_CURVE_KEY_NAME "key-name"

//  Write a new key pair: `path` (public, mode 0644) and `path`_secret
//  (public + secret, mode 0600, never readable by others, not even for a
//  moment). Refuses to overwrite either file. Returns 0, or -1 with the
//  reason (a sentence naming the file) in `error` (error_size bytes),
//  having left no file behind.
int imgp_curve_keygen (const char *path, char *error, size_t error_size);

#endif

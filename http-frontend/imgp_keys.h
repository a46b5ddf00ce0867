/*  imgp_keys — the API keys of --api-keys FILE: loading, reloading and
    checking the key a request presents.

    Why: uploads may be limited to holders of a key, each key with its own
    request rate. The frontend checks a key on every request from thousands
    of worker threads, and an operator rotates keys by editing the file and
    asking for a reload, without a restart and without a window in which
    no key, or half a file, is in force.

    File format, one key a line, fields separated by spaces or tabs:

        NAME KEY [RATE_PER_S [BURST]]

    A line whose first non-blank character is '#' is a comment ('#' later
    in a line is an ordinary character: keys may hold it); blank lines are
    skipped. NAME: 1..64 of [A-Za-z0-9_.-], what logs and metrics show.
    KEY: 16..256 printable ASCII characters other than space. RATE: requests
    a second, a positive number (0.5 is one every two seconds); absent means
    unlimited (rate 0 in imgp_key_info_t). BURST: a positive whole number,
    the requests allowed at once; absent means max (1, ceil (RATE)). A
    duplicate NAME or KEY is an error, and so is a file with no key at all
    (more often a half-written file than an intent).

    Never: put a key into a message, log or error text (they name the NAME
    and the line), or compare a presented key with anything but the
    constant-time loop of imgp_keys_check.
*/
#ifndef IMGP_KEYS_H_INCLUDED
#define IMGP_KEYS_H_INCLUDED

#include <stddef.h>

#define IMGP_KEYS_NAME_MAX 64       //  longest NAME
#define IMGP_KEYS_KEY_MIN 16        //  shortest KEY
#define IMGP_KEYS_KEY_MAX 256       //  longest KEY
#define IMGP_KEYS_BURST_MAX 1000000 //  largest BURST
#define IMGP_KEYS_RATE_MAX 1e6      //  largest RATE

//  What imgp_keys_check tells about the key it found: a copy, the
//  caller's to keep.
typedef struct {
    char name [IMGP_KEYS_NAME_MAX + 1]; //  the key's NAME
    double rate;                //  requests a second; 0 = unlimited
    double burst;               //  requests at once (a whole number); 0 when unlimited
} imgp_key_info_t;

typedef struct _imgp_keys_t imgp_keys_t;

//  Load the key file at `path` (the path is copied, for reloads). Returns
//  NULL when it cannot be read or a line is bad, with the reason (file and
//  line number, never the key) in `error` (`error_size` bytes, may be 0).
imgp_keys_t *imgp_keys_new (const char *path, char *error, size_t error_size);

//  Free the keys. Safe on NULL and twice.
void imgp_keys_destroy (imgp_keys_t **self_p);

//  Read the file again and put the new set in force at once. On any error
//  the old set stays in force and the reason is in `error`; returns 0 or
//  -1. Safe while other threads call imgp_keys_check.
int imgp_keys_reload (imgp_keys_t *self, char *error, size_t error_size);

//  Number of keys in force.
size_t imgp_keys_size (imgp_keys_t *self);

//  Look up `presented` (NULL is "no key") among the keys in force. Every
//  key is compared, each in the same time whatever the bytes, so the time
//  taken tells nothing about how much of a key was right. Returns 0 and
//  fills `out` (may be NULL) when it is a key, -1 when it is not.
int imgp_keys_check (imgp_keys_t *self, const char *presented, imgp_key_info_t *out);

//  The key a request presents: the value of an `Authorization: Bearer KEY`
//  header (scheme in any case), or else of `X-API-Key`. Either header
//  value may be NULL. Copies the key, without surrounding blanks, into
//  `buf` (`size` bytes) and returns `buf`, or NULL when neither header
//  holds a key or it does not fit.
const char *imgp_keys_presented (const char *authorization, const char *x_api_key, char *buf,
                                 size_t size);

#endif

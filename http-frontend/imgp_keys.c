/*  imgp_keys — see imgp_keys.h.

    A key set is an immutable array, loaded whole before it is put in
    force; a reader-writer lock guards only the pointer to it, so a reload
    parses the file with no lock held and then swaps the pointer. The lock
    prefers writers (a GNU attribute): with thousands of threads checking
    keys, a reader-preferring lock could keep a reload waiting for ever.

    Constant time: each key sits zero-padded in a slot one byte longer
    than the longest key, and the presented key is padded the same way, so
    every comparison reads every byte of every slot and folds the
    differences with OR; the match is picked out with masks, not branches.
    That is O(keys x 257 bytes) a request, about 25 us for a thousand keys:
    fine for the hundreds we expect. Keys contain no NUL, so zero padding
    cannot make two different keys equal; a presented key longer than any
    slot differs in the last byte.

    Error texts name the file and line, never a field of the line: a line
    with its fields swapped would otherwise print its KEY as a NAME.
*/
#include "imgp_keys.h"
#include "imgp_msg.h"

#include <assert.h>
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define S_SLOT (IMGP_KEYS_KEY_MAX + 1)  //  bytes a key is padded to
#define S_LINE_MAX 1024                 //  longest line of a key file
#define S_KEYS_MAX 100000               //  most keys in one file
#define S_BLANKS " \t\r\n\v\f"          //  what separates fields

//  A NAME travels as a message's owner, so proto/ checks it (one rule).
static_assert (IMGP_KEYS_NAME_MAX == IMGP_OWNER_MAX, "a key NAME is an owner");

typedef struct {
    char name [IMGP_KEYS_NAME_MAX + 1]; //  NAME
    unsigned char key [S_SLOT];         //  KEY, zero-padded to the slot
    size_t key_len;                     //  KEY's length
    double rate;                        //  requests a second, 0 = unlimited
    double burst;                       //  requests at once, 0 when unlimited
    int line;                           //  line of the file, for error texts
} s_key_t;

typedef struct {
    s_key_t *keys;              //  the keys, in file order
    size_t size;                //  keys in use
    size_t max;                 //  keys allocated
} s_set_t;

struct _imgp_keys_t {
    pthread_rwlock_t lock;      //  guards `set` (the pointer, not the keys)
    s_set_t *set;               //  keys in force, never NULL
    char *path;                 //  the key file, read again by reloads
};

//  Both field comparisons used to find duplicates.
typedef int(s_field_cmp_fn) (const s_key_t *a, const s_key_t *b);

//  --------------------------------------------------------------------------
//  Error text

static int
s_fail (char *error, size_t error_size, const char *format, ...)
    __attribute__ ((format (printf, 3, 4)));

static int
s_fail (char *error, size_t error_size, const char *format, ...)
{
    if (error && error_size) {
        va_list args;
        va_start (args, format);
        vsnprintf (error, error_size, format, args);
        va_end (args);
    }
    return -1;
}

//  --------------------------------------------------------------------------
//  One line

static bool
s_key_valid (const char *key)
{
    size_t len = strlen (key);
    if (len < IMGP_KEYS_KEY_MIN || len > IMGP_KEYS_KEY_MAX)
        return false;
    for (size_t i = 0; i < len; i++)
        if (key [i] < 0x21 || key [i] > 0x7E)
            return false;
    return true;
}

static int
s_parse_rate (const char *text, double *rate)
{
    char *end;
    errno = 0;
    *rate = strtod (text, &end);
    //  isfinite refuses "nan" and "inf", which strtod takes.
    if (errno || *end || !isfinite (*rate) || *rate <= 0 || *rate > IMGP_KEYS_RATE_MAX)
        return -1;
    return 0;
}

static int
s_parse_burst (const char *text, double *burst)
{
    if (text [0] < '0' || text [0] > '9')
        return -1;              //  no sign, no blank: strtol would take them
    char *end;
    errno = 0;
    long value = strtol (text, &end, 10);
    if (errno || *end || value < 1 || value > IMGP_KEYS_BURST_MAX)
        return -1;
    *burst = (double) value;
    return 0;
}

//  Parse the fields of one key line (already split) into `key`; -1 with
//  the reason (not naming any field) when one is bad.
static int
s_parse_fields (char **fields, int count, s_key_t *key, const char **reason)
{
    if (count < 2 || count > 4) {
        *reason = "expected NAME KEY [RATE_PER_S [BURST]]";
        return -1;
    }
    if (!imgp_msg_owner_valid (fields [0])) {
        *reason = "NAME must be 1..64 of A-Z a-z 0-9 _ . -";
        return -1;
    }
    if (!s_key_valid (fields [1])) {
        *reason = "KEY must be 16..256 printable characters, no spaces";
        return -1;
    }
    if (count >= 3 && s_parse_rate (fields [2], &key->rate) == -1) {
        *reason = "RATE_PER_S must be a number above 0, at most 1e6";
        return -1;
    }
    if (count == 4 && s_parse_burst (fields [3], &key->burst) == -1) {
        *reason = "BURST must be a whole number from 1 to 1000000";
        return -1;
    }
    if (count == 3)
        key->burst = fmax (1, ceil (key->rate));
    strcpy (key->name, fields [0]);
    key->key_len = strlen (fields [1]);
    memcpy (key->key, fields [1], key->key_len);
    return 0;
}

//  Split `line` into at most 5 fields (5 means too many). Returns the
//  count; 0 for a blank or comment line.
static int
s_split (char *line, char **fields)
{
    line += strspn (line, S_BLANKS);
    if (*line == '#')
        return 0;
    int count = 0;
    char *saveptr;
    for (char *field = strtok_r (line, S_BLANKS, &saveptr); field && count < 5;
         field = strtok_r (NULL, S_BLANKS, &saveptr))
        fields [count++] = field;
    return count;
}

//  --------------------------------------------------------------------------
//  A whole set

static void
s_set_destroy (s_set_t **set_p)
{
    if (set_p && *set_p) {
        s_set_t *set = *set_p;
        if (set->keys)
            explicit_bzero (set->keys, set->max * sizeof (s_key_t));
        free (set->keys);
        free (set);
        *set_p = NULL;
    }
}

//  A zeroed key at the end of the set, or NULL when out of memory.
static s_key_t *
s_set_append (s_set_t *set)
{
    if (set->size == set->max) {
        size_t max = set->max ? set->max * 2 : 16;
        s_key_t *keys = calloc (max, sizeof (s_key_t));
        if (!keys)
            return NULL;
        //  Not realloc: the old block must be wiped, not left in the heap.
        if (set->keys) {
            memcpy (keys, set->keys, set->size * sizeof (s_key_t));
            explicit_bzero (set->keys, set->max * sizeof (s_key_t));
            free (set->keys);
        }
        set->keys = keys;
        set->max = max;
    }
    return &set->keys [set->size++];
}

//  Parse one line into the set. Returns 0, or -1 with the reason.
static int
s_set_add_line (s_set_t *set, char *line, int lineno, const char *path, char *error,
                size_t error_size)
{
    char *fields [5];
    int count = s_split (line, fields);
    if (count == 0)
        return 0;
    if (set->size == S_KEYS_MAX)
        return s_fail (error, error_size, "%s:%d: more than %d keys", path, lineno, S_KEYS_MAX);
    s_key_t *key = s_set_append (set);
    if (!key)
        return s_fail (error, error_size, "%s:%d: out of memory", path, lineno);
    key->line = lineno;
    const char *reason;
    if (s_parse_fields (fields, count, key, &reason) == -1)
        return s_fail (error, error_size, "%s:%d: %s", path, lineno, reason);
    return 0;
}

//  Read every line of `file` into the set.
static int
s_set_read (s_set_t *set, FILE *file, const char *path, char *error, size_t error_size)
{
    char *line = NULL;
    size_t line_size = 0;
    int lineno = 0, rc = 0;
    ssize_t len;
    while (rc == 0 && (len = getline (&line, &line_size, file)) != -1) {
        lineno++;
        if (len > S_LINE_MAX)
            rc = s_fail (error, error_size, "%s:%d: longer than %d characters", path, lineno,
                         S_LINE_MAX);
        else
            rc = s_set_add_line (set, line, lineno, path, error, error_size);
    }
    if (rc == 0 && ferror (file))
        rc = s_fail (error, error_size, "%s: read error: %s", path, strerror (errno));
    if (line)
        explicit_bzero (line, line_size);
    free (line);
    return rc;
}

static int
s_name_cmp (const s_key_t *a, const s_key_t *b)
{
    return strcmp (a->name, b->name);
}

static int
s_key_cmp (const s_key_t *a, const s_key_t *b)
{
    return memcmp (a->key, b->key, S_SLOT);
}

//  qsort_r order: by the field, then by line, so equal neighbours come
//  earlier line first.
static int
s_order (const void *a, const void *b, void *field_cmp)
{
    const s_key_t *x = *(const s_key_t *const *) a, *y = *(const s_key_t *const *) b;
    int cmp = (*(s_field_cmp_fn **) field_cmp) (x, y);
    return cmp ? cmp : x->line - y->line;
}

//  -1 with the two lines named when two keys share the field.
static int
s_set_unique (s_set_t *set, s_key_t **order, s_field_cmp_fn *field_cmp, const char *field,
              const char *path, char *error, size_t error_size)
{
    for (size_t i = 0; i < set->size; i++)
        order [i] = &set->keys [i];
    qsort_r (order, set->size, sizeof (s_key_t *), s_order, &field_cmp);
    for (size_t i = 1; i < set->size; i++)
        if (field_cmp (order [i - 1], order [i]) == 0)
            return s_fail (error, error_size, "%s:%d: same %s as line %d", path,
                           order [i]->line, field, order [i - 1]->line);
    return 0;
}

static int
s_set_check (s_set_t *set, const char *path, char *error, size_t error_size)
{
    if (set->size == 0)
        return s_fail (error, error_size, "%s: no keys", path);
    s_key_t **order = calloc (set->size, sizeof (s_key_t *));
    if (!order)
        return s_fail (error, error_size, "%s: out of memory", path);
    int rc = s_set_unique (set, order, s_name_cmp, "NAME", path, error, error_size);
    if (rc == 0)
        rc = s_set_unique (set, order, s_key_cmp, "KEY", path, error, error_size);
    free (order);
    return rc;
}

static s_set_t *
s_set_load (const char *path, char *error, size_t error_size)
{
    s_set_t *set = calloc (1, sizeof (s_set_t));
    if (!set) {
        s_fail (error, error_size, "%s: out of memory", path);
        return NULL;
    }
    FILE *file = fopen (path, "r");
    if (!file) {
        s_fail (error, error_size, "cannot open %s: %s", path, strerror (errno));
        s_set_destroy (&set);
        return NULL;
    }
    int rc = s_set_read (set, file, path, error, error_size);
    fclose (file);
    if (rc == 0)
        rc = s_set_check (set, path, error, error_size);
    if (rc == -1)
        s_set_destroy (&set);
    return set;
}

//  --------------------------------------------------------------------------
//  Constant-time lookup

//  Zero when the two slots are equal; reads every byte whatever they hold.
static unsigned
s_slot_diff (const unsigned char *a, const unsigned char *b)
{
    unsigned diff = 0;
    for (size_t i = 0; i < S_SLOT; i++)
        diff |= a [i] ^ b [i];
    return diff;
}

//  Index + 1 of the key equal to `slot`, or 0. No branch depends on a byte
//  of a key: every key is compared and the match is selected by a mask.
static size_t
s_set_find (const s_set_t *set, const unsigned char *slot, size_t len)
{
    size_t found = 0;
    for (size_t i = 0; i < set->size; i++) {
        uint64_t diff = s_slot_diff (slot, set->keys [i].key)
                        | (uint64_t) (len ^ set->keys [i].key_len);
        uint64_t equal = ((diff | (0 - diff)) >> 63) ^ 1;  //  1 when diff == 0
        found |= (size_t) (0 - equal) & (i + 1);
    }
    return found;
}

//  --------------------------------------------------------------------------
//  Public API

imgp_keys_t *
imgp_keys_new (const char *path, char *error, size_t error_size)
{
    assert (path);
    imgp_keys_t *self = calloc (1, sizeof (imgp_keys_t));
    if (!self) {
        s_fail (error, error_size, "out of memory");
        return NULL;
    }
    pthread_rwlockattr_t attr;
    pthread_rwlockattr_init (&attr);
    pthread_rwlockattr_setkind_np (&attr, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
    int rc = pthread_rwlock_init (&self->lock, &attr);
    pthread_rwlockattr_destroy (&attr);
    if (rc != 0) {
        free (self);
        s_fail (error, error_size, "cannot make a lock: %s", strerror (rc));
        return NULL;
    }
    self->path = strdup (path);
    self->set = self->path ? s_set_load (path, error, error_size) : NULL;
    if (!self->set) {
        if (!self->path)
            s_fail (error, error_size, "out of memory");
        imgp_keys_destroy (&self);
    }
    return self;
}

void
imgp_keys_destroy (imgp_keys_t **self_p)
{
    if (self_p && *self_p) {
        imgp_keys_t *self = *self_p;
        s_set_destroy (&self->set);
        pthread_rwlock_destroy (&self->lock);
        free (self->path);
        free (self);
        *self_p = NULL;
    }
}

int
imgp_keys_reload (imgp_keys_t *self, char *error, size_t error_size)
{
    assert (self);
    s_set_t *set = s_set_load (self->path, error, error_size);
    if (!set)
        return -1;
    pthread_rwlock_wrlock (&self->lock);
    s_set_t *old = self->set;
    self->set = set;
    pthread_rwlock_unlock (&self->lock);
    s_set_destroy (&old);
    return 0;
}

size_t
imgp_keys_size (imgp_keys_t *self)
{
    assert (self);
    pthread_rwlock_rdlock (&self->lock);
    size_t size = self->set->size;
    pthread_rwlock_unlock (&self->lock);
    return size;
}

int
imgp_keys_check (imgp_keys_t *self, const char *presented, imgp_key_info_t *out)
{
    assert (self);
    if (!presented)
        return -1;
    unsigned char slot [S_SLOT] = {0};
    size_t len = strnlen (presented, S_SLOT);
    memcpy (slot, presented, len);

    pthread_rwlock_rdlock (&self->lock);
    size_t found = s_set_find (self->set, slot, len);
    if (found && out) {
        const s_key_t *key = &self->set->keys [found - 1];
        strcpy (out->name, key->name);
        out->rate = key->rate;
        out->burst = key->burst;
    }
    pthread_rwlock_unlock (&self->lock);
    explicit_bzero (slot, sizeof slot);
    return found ? 0 : -1;
}

//  --------------------------------------------------------------------------
//  Presented key

static const char *
s_skip_blanks (const char *text)
{
    while (*text == ' ' || *text == '\t')
        text++;
    return text;
}

//  The credentials of a Bearer Authorization value, or NULL.
static const char *
s_bearer (const char *authorization)
{
    if (!authorization)
        return NULL;
    const char *text = s_skip_blanks (authorization);
    if (strncasecmp (text, "Bearer", 6) != 0 || (text [6] != ' ' && text [6] != '\t'))
        return NULL;
    text = s_skip_blanks (text + 6);
    return *text ? text : NULL;
}

const char *
imgp_keys_presented (const char *authorization, const char *x_api_key, char *buf, size_t size)
{
    assert (buf);
    const char *key = s_bearer (authorization);
    if (!key)
        key = x_api_key;
    if (!key)
        return NULL;
    key = s_skip_blanks (key);
    size_t len = strlen (key);
    while (len && (key [len - 1] == ' ' || key [len - 1] == '\t'))
        len--;
    if (len == 0 || len >= size)
        return NULL;
    memcpy (buf, key, len);
    buf [len] = 0;
    return buf;
}

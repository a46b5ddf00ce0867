/*  imgp_walk — see imgp_walk.h.

    A stack of levels, one per directory on the current path. Entering a
    directory reads its names once (readdir, then stat on each, following
    links: d_type is unknown on some file systems and says nothing about
    a link's target), splits them into files and subdirectories, sorts
    both, and closes it: no directory handle stays open, so a deep tree
    costs no file descriptors. A loop is a directory whose device and
    inode equal one of the levels on the stack, which is exactly the set
    of its ancestors.
*/
#include "imgp_walk.h"

#include <assert.h>
#include <dirent.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define S_PATH_MAX 4096

typedef struct {
    char *path;                 //  root-joined path of this directory (owned)
    dev_t dev;                  //  its device, for loops and exclusion
    ino_t ino;                  //  its inode
    char **files;               //  names of its files, sorted (owned)
    size_t nfiles;              //  entries in files
    size_t next_file;           //  next file to hand out
    char **dirs;                //  names of its subdirectories, sorted (owned)
    size_t ndirs;               //  entries in dirs
    size_t next_dir;            //  next subdirectory to enter
} s_level_t;

struct _imgp_walk_t {
    s_level_t *levels;          //  the current path, root first
    size_t depth;               //  levels in use
    size_t capacity;            //  levels allocated
    size_t root_len;            //  length of the root path, for `relative`
    bool exclude;               //  a directory is excluded
    dev_t exclude_dev;          //  its device
    ino_t exclude_ino;          //  its inode
    char path [S_PATH_MAX];     //  the last path handed out
};

static void
s_names_free (char **names, size_t count)
{
    for (size_t i = 0; i < count; i++)
        free (names [i]);
    free (names);
}

static void
s_level_free (s_level_t *level)
{
    free (level->path);
    s_names_free (level->files, level->nfiles);
    s_names_free (level->dirs, level->ndirs);
    memset (level, 0, sizeof *level);
}

static int
s_compare (const void *a, const void *b)
{
    return strcmp (*(char *const *) a, *(char *const *) b);
}

//  Append a copy of `name` to a growing array. Returns 0 or -1.
static int
s_names_add (char ***names, size_t *count, const char *name)
{
    if ((*count & (*count - 1)) == 0) {        //  0, 1, 2, 4...: grow
        char **grown = realloc (*names, (*count ? *count * 2 : 8) * sizeof *grown);
        if (!grown)
            return -1;
        *names = grown;
    }
    char *copy = strdup (name);
    if (!copy)
        return -1;
    (*names) [(*count)++] = copy;
    return 0;
}

//  Read directory `path` into `level`. Returns 0, or -1 with a message.
static int
s_level_read (s_level_t *level, const char *path, char *problem, size_t problem_size)
{
    memset (level, 0, sizeof *level);
    DIR *handle = opendir (path);
    level->path = strdup (path);
    if (!handle || !level->path) {
        snprintf (problem, problem_size, "cannot list '%s': %s", path, strerror (errno));
        if (handle)
            closedir (handle);
        s_level_free (level);
        return -1;
    }
    int rc = 0;
    struct dirent *entry;
    while (rc == 0 && (errno = 0, entry = readdir (handle))) {
        if (entry->d_name [0] == '.')
            continue;
        char child [S_PATH_MAX];
        struct stat st;
        if (snprintf (child, sizeof child, "%s/%s", path, entry->d_name) >= (int) sizeof child
        ||  stat (child, &st) != 0)
            continue;           //  too long to open, or a dangling link
        if (S_ISREG (st.st_mode))
            rc = s_names_add (&level->files, &level->nfiles, entry->d_name);
        else
        if (S_ISDIR (st.st_mode))
            rc = s_names_add (&level->dirs, &level->ndirs, entry->d_name);
    }
    int err = rc != 0 ? ENOMEM : errno;
    closedir (handle);
    if (err != 0) {
        snprintf (problem, problem_size, "cannot list '%s': %s", path, strerror (err));
        s_level_free (level);
        return -1;
    }
    //  qsort must not see the NULL of an empty list.
    if (level->nfiles > 1)
        qsort (level->files, level->nfiles, sizeof (char *), s_compare);
    if (level->ndirs > 1)
        qsort (level->dirs, level->ndirs, sizeof (char *), s_compare);
    return 0;
}

//  Push directory `path` (already stat'ed as `st`). Returns 0, or -1 with
//  a message.
static int
s_push (imgp_walk_t *self, const char *path, const struct stat *st, char *problem,
        size_t problem_size)
{
    if (self->depth == self->capacity) {
        size_t bigger = self->capacity ? self->capacity * 2 : 16;
        s_level_t *grown = realloc (self->levels, bigger * sizeof *grown);
        if (!grown) {
            snprintf (problem, problem_size, "cannot enter '%s': out of memory", path);
            return -1;
        }
        self->levels = grown;
        self->capacity = bigger;
    }
    s_level_t *level = &self->levels [self->depth];
    if (s_level_read (level, path, problem, problem_size) != 0)
        return -1;
    level->dev = st->st_dev;
    level->ino = st->st_ino;
    self->depth++;
    return 0;
}

imgp_walk_t *
imgp_walk_new (const char *root, char *error, size_t error_size)
{
    assert (root && error && error_size > 0);
    imgp_walk_t *self = calloc (1, sizeof *self);
    if (!self) {
        snprintf (error, error_size, "out of memory");
        return NULL;
    }
    //  "dir/" and "dir" give the same relative paths.
    char trimmed [S_PATH_MAX];
    size_t len = strlen (root);
    while (len > 1 && root [len - 1] == '/')
        len--;
    struct stat st;
    if (len >= sizeof trimmed)
        snprintf (error, error_size, "path '%s' is too long", root);
    else {
        memcpy (trimmed, root, len);
        trimmed [len] = 0;
        self->root_len = len;
        if (stat (trimmed, &st) != 0)
            snprintf (error, error_size, "cannot open '%s': %s", root, strerror (errno));
        else
        if (s_push (self, trimmed, &st, error, error_size) == 0)
            return self;
    }
    imgp_walk_destroy (&self);
    return NULL;
}

void
imgp_walk_destroy (imgp_walk_t **self_p)
{
    assert (self_p);
    imgp_walk_t *self = *self_p;
    if (self) {
        while (self->depth > 0)
            s_level_free (&self->levels [--self->depth]);
        free (self->levels);
        free (self);
        *self_p = NULL;
    }
}

void
imgp_walk_exclude (imgp_walk_t *self, const char *path)
{
    assert (self && path);
    struct stat st;
    self->exclude = stat (path, &st) == 0 && S_ISDIR (st.st_mode);
    if (self->exclude) {
        self->exclude_dev = st.st_dev;
        self->exclude_ino = st.st_ino;
    }
}

//  The ancestor that `st` is, or NULL: entering it would loop.
static const s_level_t *
s_ancestor (imgp_walk_t *self, const struct stat *st)
{
    for (size_t i = 0; i < self->depth; i++)
        if (self->levels [i].dev == st->st_dev && self->levels [i].ino == st->st_ino)
            return &self->levels [i];
    return NULL;
}

//  Enter the next subdirectory of `level`. Returns IMGP_WALK_FILE to go
//  on walking (entered, skipped or excluded), IMGP_WALK_REFUSED with a
//  problem.
static imgp_walk_event_t
s_enter (imgp_walk_t *self, s_level_t *level, char *problem, size_t problem_size)
{
    const char *name = level->dirs [level->next_dir++];
    if (snprintf (self->path, sizeof self->path, "%s/%s", level->path, name)
        >= (int) sizeof self->path) {
        snprintf (problem, problem_size, "path '%s/%s' is too long", level->path, name);
        return IMGP_WALK_REFUSED;
    }
    struct stat st;
    if (stat (self->path, &st) != 0 || !S_ISDIR (st.st_mode))
        return IMGP_WALK_FILE;  //  gone since it was listed
    if (self->exclude && st.st_dev == self->exclude_dev && st.st_ino == self->exclude_ino)
        return IMGP_WALK_FILE;
    const s_level_t *ancestor = s_ancestor (self, &st);
    if (ancestor) {
        snprintf (problem, problem_size, "symlink loop: '%s' leads back to '%s'; not entered",
                  self->path, ancestor->path);
        return IMGP_WALK_REFUSED;
    }
    char path [S_PATH_MAX];
    memcpy (path, self->path, strlen (self->path) + 1);
    //  s_push may move the levels: `level` is not used after it.
    return s_push (self, path, &st, problem, problem_size) == 0 ? IMGP_WALK_FILE
                                                                : IMGP_WALK_REFUSED;
}

imgp_walk_event_t
imgp_walk_next (imgp_walk_t *self, const char **path, const char **relative, char *problem,
                size_t problem_size)
{
    assert (self && path && relative && problem);
    while (self->depth > 0) {
        s_level_t *level = &self->levels [self->depth - 1];
        if (level->next_file < level->nfiles) {
            const char *name = level->files [level->next_file++];
            if (snprintf (self->path, sizeof self->path, "%s/%s", level->path, name)
                >= (int) sizeof self->path)
                continue;       //  cannot be opened; s_level_read kept it out already
            *path = self->path;
            *relative = self->path + self->root_len + 1;
            return IMGP_WALK_FILE;
        }
        if (level->next_dir < level->ndirs) {
            if (s_enter (self, level, problem, problem_size) == IMGP_WALK_REFUSED) {
                *path = self->path;
                *relative = self->path + self->root_len + 1;
                return IMGP_WALK_REFUSED;
            }
            continue;
        }
        s_level_free (&self->levels [--self->depth]);
    }
    return IMGP_WALK_END;
}

size_t
imgp_walk_depth (imgp_walk_t *self)
{
    assert (self);
    return self->depth;
}

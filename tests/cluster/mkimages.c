/*  mkimages — the input tree for tests/cluster/test_netns.sh: COUNT real images
    (JPEG, PNG and WebP encoded by libvips) spread over nested folders, in
    mixed sizes, so a batch run over it walks subdirectories and its jobs
    take different times. The same COUNT gives the same tree.

    Usage: mkimages OUTDIR COUNT
    Prints one line per file: its path relative to OUTDIR.

    Built by test_netns.sh itself (cc + pkg-config vips), like the fixtures of
    tests/integration/harness.c: a gradient with noise, so every image
    decodes and none compresses to nothing.
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <errno.h>
#include <vips/vips.h>

//  Folders the images go to, by index modulo their count.
static const char *s_dirs [] = {
    "", "holiday", "holiday/day-1", "holiday/day-1/beach", "work",
    "work/2026/scans", "misc/a b"   //  a space in a path, as users have
};
#define S_DIRS (sizeof s_dirs / sizeof s_dirs [0])

//  mkdir -p for a relative path under root. Returns 0 or -1.
static int
s_mkdirs (const char *root, const char *rel)
{
    char path [4096];
    snprintf (path, sizeof path, "%s/%s", root, rel);
    for (char *p = path + strlen (root) + 1; ; p++) {
        if (*p == '/' || *p == '\0') {
            char keep = *p;
            *p = '\0';
            if (mkdir (path, 0755) && errno != EEXIST)
                return -1;
            *p = keep;
            if (!keep)
                return 0;
        }
    }
}

//  Image number i: every 10th a large "photo" (a JPEG), the rest small to
//  medium; PNG and WebP smaller, as their encoders are the slow ones here.
static void
s_size (int i, const char *ext, int *w, int *h)
{
    if (i % 10 == 7) {
        *w = 1920 + (i % 3) * 160;
        *h = 1280 + (i % 4) * 120;
    }
    else
    if (!strcmp (ext, "jpg")) {
        *w = 160 + (i * 137) % 900;
        *h = 120 + (i * 89) % 700;
    }
    else {
        *w = 120 + (i * 137) % 600;
        *h = 90 + (i * 89) % 450;
    }
}

static int
s_make (const char *root, int i)
{
    static const char *exts [] = { "jpg", "png", "webp" };
    const char *dir = s_dirs [i % S_DIRS];
    const char *ext = exts [(i / S_DIRS) % 3];
    if (i % 10 == 7)
        ext = "jpg";                //  large photos as cameras make them
    int w, h;
    s_size (i, ext, &w, &h);

    VipsObject *scope = VIPS_OBJECT (vips_image_new ());
    //  Noise made at a quarter of the size and scaled up: texture enough
    //  for real encoder work, at a sixteenth of the cost of full-size noise.
    VipsImage **t = (VipsImage **) vips_object_local_array (scope, 7);
    double scale [2] = { 255.0 / w, 255.0 / h }, offset [2] = { 0, 0 };
    int rc = vips_xyz (&t [0], w, h, NULL)
          || vips_linear (t [0], &t [4], scale, offset, 2, NULL)
          || vips_gaussnoise (&t [5], w / 4 + 1, h / 4 + 1, "mean", 128.0,
                              "sigma", 20.0 + i % 40, NULL)
          || vips_resize (t [5], &t [6], 4.0, "kernel", VIPS_KERNEL_LINEAR, NULL)
          || vips_crop (t [6], &t [1], 0, 0, w, h, NULL)
          || vips_bandjoin2 (t [4], t [1], &t [2], NULL)
          || vips_cast_uchar (t [2], &t [3], NULL);

    char rel [1024], path [4096];
    snprintf (rel, sizeof rel, "%s%simg-%03d.%s", dir, *dir ? "/" : "", i, ext);
    snprintf (path, sizeof path, "%s/%s", root, rel);
    if (rc == 0 && *dir && s_mkdirs (root, dir))
        rc = -1;
    if (rc == 0) {
        if (!strcmp (ext, "jpg"))
            rc = vips_jpegsave (t [3], path, "Q", 85, NULL);
        else
        if (!strcmp (ext, "png"))
            rc = vips_pngsave (t [3], path, "compression", 1, NULL);
        else
            rc = vips_webpsave (t [3], path, "Q", 80, NULL);
    }
    g_object_unref (scope);
    if (rc) {
        fprintf (stderr, "mkimages: %s: %s\n", path, vips_error_buffer ());
        return -1;
    }
    printf ("%s\n", rel);
    return 0;
}

int
main (int argc, char **argv)
{
    if (argc != 3 || atoi (argv [2]) < 1) {
        fprintf (stderr, "usage: %s OUTDIR COUNT\n", argv [0]);
        return 2;
    }
    if (VIPS_INIT (argv [0])) {
        fprintf (stderr, "mkimages: libvips: %s\n", vips_error_buffer ());
        return 1;
    }
    vips_cache_set_max (0);
    if (mkdir (argv [1], 0755) && errno != EEXIST) {
        perror (argv [1]);
        return 1;
    }
    int count = atoi (argv [2]);
    for (int i = 0; i < count; i++)
        if (s_make (argv [1], i))
            return 1;
    vips_shutdown ();
    return 0;
}

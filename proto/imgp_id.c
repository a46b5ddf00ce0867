/*  imgp_id — see imgp_id.h. 16 bytes from getrandom(2), printed as 32
    lowercase hex characters.

    Why getrandom: it reads the kernel CSPRNG without a file descriptor, so
    it works in a chroot and cannot run out of fds under load. It must never
    fall back to a weak generator: without randomness we refuse to make an
    id rather than make a guessable one.
*/
#include "imgp_id.h"

#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/random.h>

#define S_ID_BYTES (IMGP_ID_LEN / 2)

int
imgp_id_new (char id [IMGP_ID_LEN + 1])
{
    static const char hex [] = "0123456789abcdef";
    uint8_t bytes [S_ID_BYTES];
    size_t got = 0;
    while (got < sizeof bytes) {
        ssize_t n = getrandom (bytes + got, sizeof bytes - got, 0);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            id [0] = '\0';
            return -1;
        }
        got += (size_t) n;
    }
    for (size_t i = 0; i < sizeof bytes; i++) {
        id [2 * i] = hex [bytes [i] >> 4];
        id [2 * i + 1] = hex [bytes [i] & 0x0f];
    }
    id [IMGP_ID_LEN] = '\0';
    return 0;
}

//  The characters of an id: a table, since the broker checks ids many
//  times a job (codec, table, spool paths).
static const bool s_id_char [256] = {
    ['0'] = 1, ['1'] = 1, ['2'] = 1, ['3'] = 1, ['4'] = 1, ['5'] = 1, ['6'] = 1, ['7'] = 1,
    ['8'] = 1, ['9'] = 1, ['a'] = 1, ['b'] = 1, ['c'] = 1, ['d'] = 1, ['e'] = 1, ['f'] = 1,
};

bool
imgp_id_valid (const char *text)
{
    if (!text)
        return false;
    const unsigned char *c = (const unsigned char *) text;
    for (size_t i = 0; i < IMGP_ID_LEN; i++)
        if (!s_id_char [c [i]])
            return false;       //  also stops at a NUL before IMGP_ID_LEN
    return c [IMGP_ID_LEN] == '\0';
}

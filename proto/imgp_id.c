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

bool
imgp_id_valid (const char *text)
{
    if (!text)
        return false;
    for (size_t i = 0; i < IMGP_ID_LEN; i++) {
        char c = text [i];
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')))
            return false;       //  also stops at a NUL before IMGP_ID_LEN
    }
    return text [IMGP_ID_LEN] == '\0';
}

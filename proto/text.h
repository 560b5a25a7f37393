/*
 * text.h: names as every part of leash passes them on: valid UTF-8, no
 * control characters, cut to a size on a character boundary. The library
 * cleans what it sends, leashd what it receives, so a name can never cost a
 * process its supervision nor make JSON output invalid.
 */
#ifndef LEASH_TEXT_H
#define LEASH_TEXT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The length of the valid UTF-8 sequence at s (n bytes there), or 0 when it
   is not one: overlong forms, surrogates and code points over U+10FFFF are
   invalid (RFC 3629). */
static inline size_t leash_utf8_len(const unsigned char *s, size_t n)
{
    unsigned char c = s[0];
    if (c < 0x80)
        return 1;
    size_t   len;
    uint32_t cp;
    if (c >= 0xc2 && c <= 0xdf)
        len = 2, cp = c & 0x1f;
    else if (c >= 0xe0 && c <= 0xef)
        len = 3, cp = c & 0x0f;
    else if (c >= 0xf0 && c <= 0xf4)
        len = 4, cp = c & 0x07;
    else
        return 0;
    if (n < len)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        cp = cp << 6 | (s[i] & 0x3f);
    }
    if ((len == 3 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))) ||
        (len == 4 && (cp < 0x10000 || cp > 0x10ffff)))
        return 0;
    return len;
}

/* A C0 or C1 control character or DEL, which names must not carry. */
static inline bool leash_text_is_control(const unsigned char *s, size_t len)
{
    return (len == 1 && (s[0] < 0x20 || s[0] == 0x7f)) || (len == 2 && s[0] == 0xc2 && s[1] < 0xa0);
}

/*
 * Copies src (srclen bytes, or up to its NUL when srclen is SIZE_MAX) into
 * dst (size bytes, size >= 1) as clean text: each control character and each
 * byte that does not start a valid UTF-8 sequence becomes '?', and the copy
 * is cut before the first character that would not fit. Always terminates
 * dst. dst may be src: the copy never writes ahead of what it has read.
 * Returns the length written.
 */
static inline size_t leash_text_clean(char *dst, size_t size, const char *src, size_t srclen)
{
    const unsigned char *s = (const unsigned char *)(src ? src : "");
    size_t               in = 0, out = 0;
    if (srclen == SIZE_MAX) {
        srclen = 0;
        while (s[srclen])
            srclen++;
    }
    while (in < srclen && s[in]) {
        size_t len = leash_utf8_len(s + in, srclen - in);
        bool   bad = len == 0 || leash_text_is_control(s + in, len);
        size_t put = bad ? 1 : len;
        if (out + put > size - 1)
            break;
        if (bad)
            dst[out] = '?';
        else
            for (size_t i = 0; i < len; i++)
                dst[out + i] = (char)s[in + i];
        out += put;
        in += len ? len : 1; /* a control character goes whole */
    }
    dst[out] = '\0';
    return out;
}

/* True when s (NUL-terminated) is already what leash_text_clean makes of it
   with no cut. */
static inline bool leash_text_is_clean(const char *s)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t               n = 0;
    while (p[n])
        n++;
    for (size_t i = 0; i < n;) {
        size_t len = leash_utf8_len(p + i, n - i);
        if (!len || leash_text_is_control(p + i, len))
            return false;
        i += len;
    }
    return true;
}

#endif

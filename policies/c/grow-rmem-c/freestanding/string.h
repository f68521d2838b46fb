/* The part of <string.h> that wit-bindgen's C bindings use, for a
 * freestanding wasm32 build; runtime.c implements these. */
#ifndef GROW_RMEM_FREESTANDING_STRING_H
#define GROW_RMEM_FREESTANDING_STRING_H

#include <stddef.h>

void *memcpy(void *restrict dst, const void *restrict src, size_t n);
void *memmove(void *dst, const void *src, size_t n);
void *memset(void *dst, int c, size_t n);
int memcmp(const void *a, const void *b, size_t n);
size_t strlen(const char *s);

#endif

/* The part of <stdlib.h> that wit-bindgen's C bindings use, for a
 * freestanding wasm32 build: the policy world imports no WASI, so there is
 * no libc to link. runtime.c implements these. */
#ifndef GROW_RMEM_FREESTANDING_STDLIB_H
#define GROW_RMEM_FREESTANDING_STDLIB_H

#include <stddef.h>

void *malloc(size_t size);
void *calloc(size_t count, size_t size);
void *realloc(void *ptr, size_t size);
void free(void *ptr);
_Noreturn void abort(void);

#endif

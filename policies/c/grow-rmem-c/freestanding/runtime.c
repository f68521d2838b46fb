/* The little runtime a freestanding wasm32 policy needs: an allocator for
 * the canonical ABI (`cabi_realloc` in the generated bindings calls
 * realloc; the host allocates every list and string it passes in through
 * it, and the bindings free them with free) and the memory functions the
 * bindings call.
 *
 * The allocator keeps one free list per power-of-two size class. A policy
 * allocates the same few shapes over and over (an event batch, a sysctl
 * value, a log line), so freed blocks are reused exactly and memory stays
 * flat however long the policy runs; new blocks are carved from the end of
 * the heap, growing linear memory a page at a time. Blocks are never
 * split or merged: simple, and the waste (under half a block) does not
 * matter at these sizes. The canonical ABI never asks for an alignment
 * above 8, which every block has. */

#include <stdint.h>

#include "stdlib.h"
#include "string.h"

/* Every block starts with a header holding its size class; the caller's
 * bytes follow it. Eight bytes keep the payload 8-aligned. */
#define HEADER 8u
#define MIN_CLASS 4u  /* 16-byte blocks */
#define MAX_CLASS 31u /* 2 GiB blocks, beyond any budget the host grants */
#define PAGE 65536u

/* Set by the linker (wasm-ld) to the first byte past the data and stack. */
extern unsigned char __heap_base;

static void *free_lists[MAX_CLASS + 1];
/* 64-bit, so that the end of a full 4 GiB memory does not wrap. */
static uint64_t heap_next; /* where the next new block starts */
static uint64_t heap_end;  /* end of linear memory */

/* The smallest class whose blocks hold `size` bytes after the header, or
 * 0 when none does. */
static unsigned class_for(size_t size) {
    if (size > ((size_t)1 << MAX_CLASS) - HEADER) {
        return 0;
    }
    unsigned k = MIN_CLASS;
    while (((size_t)1 << k) - HEADER < size) {
        k++;
    }
    return k;
}

/* A new block of class `k` from the end of the heap, growing memory when
 * needed; NULL when the host refuses to grow it (the policy's memory
 * budget). */
static unsigned char *carve(unsigned k) {
    if (heap_next == 0) {
        heap_next = ((uint64_t)(uintptr_t)&__heap_base + 7u) & ~(uint64_t)7u;
        heap_end = (uint64_t)__builtin_wasm_memory_size(0) * PAGE;
    }
    uint64_t size = (uint64_t)1 << k;
    if (heap_end - heap_next < size) {
        uint64_t missing = size - (heap_end - heap_next);
        uint64_t pages = (missing + PAGE - 1) / PAGE;
        if (__builtin_wasm_memory_grow(0, (size_t)pages) == (size_t)-1) {
            return NULL;
        }
        heap_end += pages * PAGE;
    }
    unsigned char *block = (unsigned char *)(uintptr_t)heap_next;
    heap_next += size;
    return block;
}

void *malloc(size_t size) {
    unsigned k = class_for(size);
    if (k == 0) {
        return NULL;
    }
    unsigned char *block = free_lists[k];
    if (block != NULL) {
        /* A free block keeps the next free block's address after its header. */
        free_lists[k] = *(void **)(block + HEADER);
    } else if ((block = carve(k)) == NULL) {
        return NULL;
    }
    *(uint32_t *)block = k;
    return block + HEADER;
}

void free(void *ptr) {
    if (ptr == NULL) {
        return;
    }
    unsigned char *block = (unsigned char *)ptr - HEADER;
    unsigned k = *(uint32_t *)block;
    *(void **)(block + HEADER) = free_lists[k];
    free_lists[k] = block;
}

void *realloc(void *ptr, size_t size) {
    if (ptr == NULL) {
        return malloc(size);
    }
    unsigned k = *(uint32_t *)((unsigned char *)ptr - HEADER);
    size_t room = ((size_t)1 << k) - HEADER;
    if (size <= room) {
        return ptr;
    }
    void *moved = malloc(size);
    if (moved != NULL) {
        memcpy(moved, ptr, room);
        free(ptr);
    }
    return moved;
}

void *calloc(size_t count, size_t size) {
    if (size != 0 && count > (size_t)-1 / size) {
        return NULL;
    }
    void *ptr = malloc(count * size);
    if (ptr != NULL) {
        memset(ptr, 0, count * size);
    }
    return ptr;
}

/* A trap: the host counts it as a fault, rebuilds the instance and calls
 * `init` again. */
_Noreturn void abort(void) {
    __builtin_trap();
}

/* With the bulk memory instructions (clang -mbulk-memory, as build.sh
 * compiles), copying and filling are one instruction each: memory.copy and
 * memory.fill. Without them, plain loops: compiled with -ffreestanding,
 * clang does not turn them back into calls to these same functions. */
#if defined(__wasm_bulk_memory__)

void *memcpy(void *restrict dst, const void *restrict src, size_t n) {
    return __builtin_memcpy(dst, src, n);
}

void *memmove(void *dst, const void *src, size_t n) {
    return __builtin_memmove(dst, src, n);
}

void *memset(void *dst, int c, size_t n) {
    return __builtin_memset(dst, c, n);
}

#else

void *memcpy(void *restrict dst, const void *restrict src, size_t n) {
    unsigned char *d = dst;
    const unsigned char *s = src;
    while (n--) {
        *d++ = *s++;
    }
    return dst;
}

void *memmove(void *dst, const void *src, size_t n) {
    unsigned char *d = dst;
    const unsigned char *s = src;
    if (d < s) {
        while (n--) {
            *d++ = *s++;
        }
    } else {
        while (n--) {
            d[n] = s[n];
        }
    }
    return dst;
}

void *memset(void *dst, int c, size_t n) {
    unsigned char *d = dst;
    while (n--) {
        *d++ = (unsigned char)c;
    }
    return dst;
}

#endif

int memcmp(const void *a, const void *b, size_t n) {
    const unsigned char *x = a;
    const unsigned char *y = b;
    for (; n; n--, x++, y++) {
        if (*x != *y) {
            return *x < *y ? -1 : 1;
        }
    }
    return 0;
}

size_t strlen(const char *s) {
    size_t n = 0;
    while (s[n]) {
        n++;
    }
    return n;
}

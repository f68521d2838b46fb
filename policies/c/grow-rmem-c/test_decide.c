/* Native tests of the decision: no root, kernel or Wasm. build.sh runs
 * them with the machine's own C compiler before it builds the component.
 * They are the C twin of the Rust example's tests/decide.rs. */

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#define GROW_RMEM_DECISION_ONLY
#include "grow_rmem.c"

static int checks;
static int failures;

static void expect(bool ok, const char *what) {
    checks++;
    if (!ok) {
        fprintf(stderr, "FAILED: %s\n", what);
        failures++;
    }
}

static bool raised_to(const int64_t rmem[3], bool receive, uint32_t limit, uint8_t rate, int64_t want) {
    int64_t next[3] = {0, 0, 0};
    return grow_rmem_decide(rmem, receive, limit, rate, next) && next[0] == rmem[0] && next[1] == rmem[1] &&
           next[2] == want;
}

int main(void) {
    const int64_t rmem[3] = {4096, 131072, 6291456};
    int64_t next[3];

    expect(raised_to(rmem, true, 6291456, 4, 7864320), "a full receive buffer raises the maximum by 25 % at rate 4");
    expect(raised_to(rmem, true, 6291456, 0, 6291456 + 98304), "rate 0 steps by 1/64");
    expect(raised_to(rmem, true, 6291456, 9, 7864320), "rates above 4 read as 4");
    expect(raised_to(rmem, true, 7000000, 4, 7864320), "a limit above the maximum still raises it");
    expect(!grow_rmem_decide(rmem, false, 6291456, 4, next), "send buffers are not ours");
    expect(!grow_rmem_decide(rmem, true, 4194304, 4, next), "a stale event: the limit was raised since");

    const int64_t tiny[3] = {1, 1, 1};
    expect(raised_to(tiny, true, 1, 0, 2), "a positive value always moves by at least 1");
    const int64_t zero[3] = {0, 0, 0};
    expect(raised_to(zero, true, 0, 4, 0), "zero has no step");

    if (failures != 0) {
        fprintf(stderr, "decision tests: %d of %d failed\n", failures, checks);
        return 1;
    }
    printf("decision tests: %d passed\n", checks);
    return 0;
}

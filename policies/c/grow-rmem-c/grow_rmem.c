/* grow-rmem-c: raises net.ipv4.tcp_rmem[2] by one learning-rate step when
 * a TCP socket's receive buffer reaches it.
 *
 * The same policy as the Rust example `wasmtune new` writes (grow-rmem),
 * in C against the bindings wit-bindgen generates from the policy world
 * (policy.h, made by build.sh). The decision is grow_rmem_decide(), a pure
 * function (test_decide.c tests it natively); the rest carries it out
 * through the host and does, by hand, the bookkeeping the Rust SDK's
 * `Tunables` does for a Rust policy:
 *
 *   - leave tcp_rmem alone in a namespace whose administrator changed it
 *     (an admin-override event), until it is handed back (admin-release);
 *   - after a request, wait until the kernel shows it (or 2 s pass): the
 *     host applies requests after the call returns, so the next batch may
 *     still carry events about the old limit;
 *   - say each problem once per namespace, not once per event.
 *
 * policy.toml is embedded in the component by build.sh (the custom section
 * `wasmtune-manifest`), as the Rust SDK's export_policy! does. */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---- The decision ------------------------------------------------------ */

/* One step of `value` at learning rate `rate`, as the SDK's rate::step:
 * value >> (6 - rate), so 25 % at rate 4 down to 1.6 % at rate 0; rates
 * above 4 read as 4 (a typo in a config must not make steps larger than a
 * quarter); at least 1 for any positive value, so small values still move. */
static uint64_t rate_step(uint64_t value, uint8_t rate) {
    if (value == 0) {
        return 0;
    }
    unsigned shift = 6u - (rate > 4 ? 4u : rate);
    uint64_t step = value >> shift;
    return step > 0 ? step : 1;
}

/* The new tcp_rmem for a receive buffer that reached `limit_bytes`: true,
 * with `next` filled in, or false when there is nothing to do: the event is
 * about a send buffer (tcp_wmem's business, not ours), or about a limit
 * that has since been raised (the kernel's tcp_rmem[2] is already above the
 * limit the socket hit, so the event is stale). Only tcp_rmem[2] changes;
 * the grant (policy.toml) allows no other field. */
bool grow_rmem_decide(const int64_t rmem[3], bool receive, uint32_t limit_bytes, uint8_t learning_rate,
                      int64_t next[3]) {
    if (!receive || (int64_t)limit_bytes < rmem[2]) {
        return false;
    }
    uint64_t magnitude = rmem[2] < 0 ? (uint64_t)0 - (uint64_t)rmem[2] : (uint64_t)rmem[2];
    next[0] = rmem[0];
    next[1] = rmem[1];
    /* No overflow: rmem[2] <= limit_bytes < 2^32 here, and a step is at
     * most a quarter of |rmem[2]|. */
    next[2] = rmem[2] + (int64_t)rate_step(magnitude, learning_rate);
    return true;
}

#ifndef GROW_RMEM_DECISION_ONLY

/* ---- Carrying it out through the host ---------------------------------- */

#include <stdlib.h> /* malloc, abort: freestanding/ in a wasm32 build */

#include "policy.h"

#define RMEM "net.ipv4.tcp_rmem"
#define RMEM_FIELDS 3
#define SCENARIO "need to increase TCP buffer size(s)"

/* How long a request may take to show in the kernel before it is presumed
 * lost and the policy may ask again (the SDK's SETTLE_TIMEOUT_MS). */
#define SETTLE_TIMEOUT_MS 2000u

/* Namespaces remembered at once. A daemon tunes a handful; past this many,
 * the least recently seen one is forgotten, which at worst means one
 * request the host refuses (admin-override, logged once) or one problem
 * said twice. */
#define MAX_NAMESPACES 64

/* Problems said once per namespace: one bit per denial kind (the WIT
 * variant's case number), and one for a tcp_rmem this policy cannot use. */
#define SAID_UNUSABLE (1u << 16)

typedef wasmtune_policy_types_event_t event_t;
typedef wasmtune_policy_types_denial_t denial_t;

/* What the policy remembers about one network namespace. */
struct netns_state {
    bool used;
    uint64_t netns;
    uint64_t last_seen; /* for forgetting the least recently seen */
    bool overridden;    /* the administrator owns tcp_rmem here */
    bool pending;       /* a request the kernel does not show yet */
    int64_t pending_value[RMEM_FIELDS];
    uint64_t pending_since; /* host clock, ms */
    uint32_t said;          /* SAID_* and 1 << denial kind */
};

static uint8_t learning_rate;
static struct netns_state namespaces[MAX_NAMESPACES];
static uint64_t seen;

/* ---- Log lines ---- */

/* A log line being written; longer lines are cut (the host truncates them
 * anyway). Started with `struct line l; l.len = 0;`: an initializer would
 * clear all of `bytes` on every event that reads tcp_rmem. */
struct line {
    char bytes[400];
    size_t len;
};

static void put_bytes(struct line *line, const uint8_t *bytes, size_t len) {
    for (size_t i = 0; i < len && line->len < sizeof line->bytes; i++) {
        line->bytes[line->len++] = (char)bytes[i];
    }
}

static void put(struct line *line, const char *text) {
    while (*text != '\0' && line->len < sizeof line->bytes) {
        line->bytes[line->len++] = *text++;
    }
}

static void put_string(struct line *line, const policy_string_t *text) {
    put_bytes(line, text->ptr, text->len);
}

static void put_u64(struct line *line, uint64_t value) {
    char digits[20];
    size_t n = 0;
    do {
        digits[n++] = (char)('0' + value % 10);
        value /= 10;
    } while (value != 0);
    while (n > 0 && line->len < sizeof line->bytes) {
        line->bytes[line->len++] = digits[--n];
    }
}

static void put_i64(struct line *line, int64_t value) {
    if (value < 0) {
        put(line, "-");
        put_u64(line, (uint64_t)0 - (uint64_t)value);
    } else {
        put_u64(line, (uint64_t)value);
    }
}

static void say(wasmtune_policy_log_level_t level, const struct line *line) {
    policy_string_t message = {(uint8_t *)line->bytes, line->len};
    wasmtune_policy_log_log(level, &message);
}

/* Says `line` unless the problem `bit` was already said in this namespace. */
static void say_once(struct netns_state *state, uint32_t bit, wasmtune_policy_log_level_t level,
                     const struct line *line) {
    if ((state->said & bit) == 0) {
        state->said |= bit;
        say(level, line);
    }
}

/* Why the host refused, in the words the Rust SDK's Denial::explain uses. */
static void put_denial(struct line *line, const denial_t *denial) {
    switch (denial->tag) {
    case WASMTUNE_POLICY_TYPES_DENIAL_NOT_GRANTED:
        put(line, "not granted: ");
        put_string(line, &denial->val.not_granted);
        break;
    case WASMTUNE_POLICY_TYPES_DENIAL_OUT_OF_BOUNDS:
        put(line, "outside the allowed range ");
        put_i64(line, denial->val.out_of_bounds.min);
        put(line, "..=");
        put_i64(line, denial->val.out_of_bounds.max);
        break;
    case WASMTUNE_POLICY_TYPES_DENIAL_NOT_OWNER:
        put(line, "policy ");
        put_string(line, &denial->val.not_owner);
        put(line, " already tunes it in this network namespace");
        break;
    case WASMTUNE_POLICY_TYPES_DENIAL_ADMIN_OVERRIDE:
        put(line, "the administrator changed it (");
        put_string(line, &denial->val.admin_override);
        put(line, "), so it is left alone");
        break;
    case WASMTUNE_POLICY_TYPES_DENIAL_RATE_LIMITED:
        put(line, "changed too recently; retry in ");
        put_u64(line, denial->val.rate_limited);
        put(line, " ms");
        break;
    case WASMTUNE_POLICY_TYPES_DENIAL_UNKNOWN_NETNS:
        put(line, "network namespace ");
        put_u64(line, denial->val.unknown_netns);
        put(line, " is not tuned by this host");
        break;
    case WASMTUNE_POLICY_TYPES_DENIAL_INVALID_VALUE:
        put(line, "invalid value: ");
        put_string(line, &denial->val.invalid_value);
        break;
    case WASMTUNE_POLICY_TYPES_DENIAL_UNSUPPORTED:
        put(line, "not supported on this kernel: ");
        put_string(line, &denial->val.unsupported);
        break;
    case WASMTUNE_POLICY_TYPES_DENIAL_QUOTA_EXCEEDED:
        put(line, "the state store is full (");
        put_u64(line, denial->val.quota_exceeded);
        put(line, " bytes)");
        break;
    default:
        put(line, "refused");
        break;
    }
}

/* Routine refusals (rate limit, a namespace that went away, a tunable this
 * kernel lacks, which the host itself reports) are debug, the
 * administrator's override is news, the rest are warnings. */
static wasmtune_policy_log_level_t denial_level(const denial_t *denial) {
    switch (denial->tag) {
    case WASMTUNE_POLICY_TYPES_DENIAL_RATE_LIMITED:
    case WASMTUNE_POLICY_TYPES_DENIAL_UNKNOWN_NETNS:
    case WASMTUNE_POLICY_TYPES_DENIAL_UNSUPPORTED:
        return WASMTUNE_POLICY_LOG_LEVEL_DEBUG;
    case WASMTUNE_POLICY_TYPES_DENIAL_ADMIN_OVERRIDE:
        return WASMTUNE_POLICY_LOG_LEVEL_INFO;
    default:
        return WASMTUNE_POLICY_LOG_LEVEL_WARN;
    }
}

static void log_denial(struct netns_state *state, const denial_t *denial) {
    struct line line;
    line.len = 0;
    put(&line, RMEM " in netns ");
    put_u64(&line, state->netns);
    put(&line, " not changed: ");
    put_denial(&line, denial);
    say_once(state, 1u << (denial->tag & 15u), denial_level(denial), &line);
}

/* ---- Namespaces ---- */

static struct netns_state *find(uint64_t netns) {
    for (size_t i = 0; i < MAX_NAMESPACES; i++) {
        if (namespaces[i].used && namespaces[i].netns == netns) {
            return &namespaces[i];
        }
    }
    return NULL;
}

/* The state of `netns`, new if need be (replacing the least recently seen
 * namespace when all slots are taken). */
static struct netns_state *track(uint64_t netns) {
    struct netns_state *state = find(netns);
    if (state == NULL) {
        state = &namespaces[0];
        for (size_t i = 0; i < MAX_NAMESPACES && state->used; i++) {
            if (!namespaces[i].used || namespaces[i].last_seen < state->last_seen) {
                state = &namespaces[i];
            }
        }
        *state = (struct netns_state){.used = true, .netns = netns};
    }
    state->last_seen = ++seen;
    return state;
}

/* ---- The tunable ---- */

/* tcp_rmem in the namespace, or false (said once) when this kernel lacks
 * it, it is not three integers, or the host refused to read it. */
static bool read_rmem(struct netns_state *state, int64_t rmem[RMEM_FIELDS]) {
    policy_string_t name;
    policy_string_set(&name, RMEM);
    wasmtune_policy_sysctl_sysctl_value_t value;
    denial_t denial;
    struct line line;
    line.len = 0;
    if (!wasmtune_policy_sysctl_read(state->netns, &name, &value, &denial)) {
        if (denial.tag == WASMTUNE_POLICY_TYPES_DENIAL_UNSUPPORTED) {
            /* The host has already reported the tunable missing: quietly. */
            put_string(&line, &denial.val.unsupported);
            put(&line, "; the decisions that need " RMEM " in netns ");
            put_u64(&line, state->netns);
            put(&line, " are skipped");
            say_once(state, SAID_UNUSABLE, WASMTUNE_POLICY_LOG_LEVEL_DEBUG, &line);
        } else {
            log_denial(state, &denial);
        }
        wasmtune_policy_types_denial_free(&denial);
        return false;
    }
    bool usable = value.tag == WASMTUNE_POLICY_TYPES_SYSCTL_VALUE_INTEGERS && value.val.integers.len == RMEM_FIELDS;
    if (usable) {
        for (size_t i = 0; i < RMEM_FIELDS; i++) {
            rmem[i] = value.val.integers.ptr[i];
        }
    } else {
        /* A shape only this policy can notice: a warning. */
        put(&line, RMEM " holds ");
        if (value.tag == WASMTUNE_POLICY_TYPES_SYSCTL_VALUE_INTEGERS) {
            put_u64(&line, value.val.integers.len);
            put(&line, " integer(s) here, not 3");
        } else {
            put(&line, "text here, not integers");
        }
        put(&line, "; the decisions that need " RMEM " in netns ");
        put_u64(&line, state->netns);
        put(&line, " are skipped");
        say_once(state, SAID_UNUSABLE, WASMTUNE_POLICY_LOG_LEVEL_WARN, &line);
    }
    wasmtune_policy_types_sysctl_value_free(&value);
    return usable;
}

/* Whether the last accepted request has yet to show in the kernel (and was
 * made less than SETTLE_TIMEOUT_MS ago); forgets it once it has. */
static bool settling(struct netns_state *state, const int64_t rmem[RMEM_FIELDS]) {
    if (!state->pending) {
        return false;
    }
    bool shown = true;
    for (size_t i = 0; i < RMEM_FIELDS; i++) {
        shown = shown && rmem[i] == state->pending_value[i];
    }
    uint64_t now = wasmtune_policy_clock_now();
    uint64_t waited = now > state->pending_since ? now - state->pending_since : 0;
    if (!shown && waited < SETTLE_TIMEOUT_MS) {
        return true;
    }
    state->pending = false;
    return false;
}

/* Asks the host for `next`: checked now, applied after this call returns.
 * An accepted request is waited out (settling); a refusal is said once per
 * kind, and the next event asks again. */
static void request(struct netns_state *state, const int64_t next[RMEM_FIELDS], uint32_t limit_bytes) {
    struct line reason;
    reason.len = 0;
    put(&reason, "receive buffers reach tcp_rmem[2] (");
    put_u64(&reason, limit_bytes);
    put(&reason, " bytes)");

    int64_t fields[RMEM_FIELDS] = {next[0], next[1], next[2]};
    wasmtune_policy_sysctl_change_t change = {
        .netns = state->netns,
        .value = {.tag = WASMTUNE_POLICY_TYPES_SYSCTL_VALUE_INTEGERS, .val.integers = {fields, RMEM_FIELDS}},
        .reason = {(uint8_t *)reason.bytes, reason.len},
    };
    policy_string_set(&change.name, RMEM);
    policy_string_set(&change.scenario, SCENARIO);

    denial_t denial;
    if (wasmtune_policy_sysctl_request_change(&change, &denial)) {
        state->pending = true;
        for (size_t i = 0; i < RMEM_FIELDS; i++) {
            state->pending_value[i] = next[i];
        }
        state->pending_since = wasmtune_policy_clock_now();
    } else {
        log_denial(state, &denial);
        wasmtune_policy_types_denial_free(&denial);
    }
}

/* ---- Events ---- */

/* A buffer at its limit: read, decide, ask. */
static void on_buffer_limit(const wasmtune_policy_types_tcp_buffer_limit_t *hit) {
    struct netns_state *state = track(hit->netns);
    if (state->overridden) {
        return;
    }
    int64_t rmem[RMEM_FIELDS];
    if (!read_rmem(state, rmem) || settling(state, rmem)) {
        return;
    }
    int64_t next[RMEM_FIELDS];
    bool receive = hit->direction == WASMTUNE_POLICY_TYPES_BUFFER_DIRECTION_RECEIVE;
    if (grow_rmem_decide(rmem, receive, hit->limit_bytes, learning_rate, next)) {
        request(state, next, hit->limit_bytes);
    }
}

static bool is_rmem(const policy_string_t *name) {
    static const char rmem[] = RMEM;
    if (name->len != sizeof rmem - 1) {
        return false;
    }
    for (size_t i = 0; i < name->len; i++) {
        if (name->ptr[i] != (uint8_t)rmem[i]) {
            return false;
        }
    }
    return true;
}

/* The administrator wrote tcp_rmem in a namespace: the host refuses every
 * change there from now on, so stop asking (it would only add denials). */
static void on_admin_override(const wasmtune_policy_types_admin_override_t *taken) {
    if (!is_rmem(&taken->sysctl)) {
        return;
    }
    struct netns_state *state = track(taken->netns);
    if (state->overridden) {
        return;
    }
    state->overridden = true;
    struct line line;
    line.len = 0;
    put_string(&line, &taken->comm);
    put(&line, " (");
    put_u64(&line, taken->pid);
    put(&line, ") changed " RMEM " in netns ");
    put_u64(&line, taken->netns);
    put(&line, "; leaving it alone there");
    say(WASMTUNE_POLICY_LOG_LEVEL_INFO, &line);
}

/* `wasmtune override clear`: tcp_rmem is ours to tune again there. */
static void on_admin_release(const wasmtune_policy_types_admin_release_t *released) {
    struct netns_state *state = find(released->netns);
    if (!is_rmem(&released->sysctl) || state == NULL || !state->overridden) {
        return;
    }
    state->overridden = false;
    struct line line;
    line.len = 0;
    put(&line, "the administrator handed " RMEM " in netns ");
    put_u64(&line, released->netns);
    put(&line, " back; tuning it again");
    say(WASMTUNE_POLICY_LOG_LEVEL_INFO, &line);
}

/* A namespace that went away: its cookie is never reused, forget it. */
static void on_namespace_change(const wasmtune_policy_types_namespace_change_t *change) {
    struct netns_state *state = find(change->netns);
    if (!change->created && state != NULL) {
        state->used = false;
    }
}

/* ---- The exports (the `handler` interface) ---- */

bool exports_wasmtune_policy_handler_init(exports_wasmtune_policy_handler_config_t *config,
                                          exports_wasmtune_policy_handler_info_t *ret, policy_string_t *err) {
    (void)err;
    /* A new instance, or init again after a fault: start from nothing. */
    learning_rate = config->learning_rate;
    for (size_t i = 0; i < MAX_NAMESPACES; i++) {
        namespaces[i].used = false;
    }
    seen = 0;
    /* The arguments belong to the callee; the settings are not used. */
    exports_wasmtune_policy_handler_config_free(config);

    /* The `events` of policy.toml (the host refuses a kind it does not
     * grant). The list is freed by the bindings after the host read it. */
    static const exports_wasmtune_policy_handler_event_kind_t kinds[] = {
        WASMTUNE_POLICY_TYPES_EVENT_KIND_TCP_BUFFER_LIMIT,
        WASMTUNE_POLICY_TYPES_EVENT_KIND_ADMIN_OVERRIDE,
        WASMTUNE_POLICY_TYPES_EVENT_KIND_NAMESPACE_CHANGE,
    };
    exports_wasmtune_policy_handler_event_kind_t *subscriptions = malloc(sizeof kinds);
    if (subscriptions == NULL) {
        abort();
    }
    for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++) {
        subscriptions[i] = kinds[i];
    }
    ret->subscriptions = (exports_wasmtune_policy_handler_list_event_kind_t){subscriptions, sizeof kinds / sizeof kinds[0]};
    ret->tick_ms.is_some = false;
    return true;
}

void exports_wasmtune_policy_handler_on_events(exports_wasmtune_policy_handler_list_event_t *batch) {
    for (size_t i = 0; i < batch->len; i++) {
        const event_t *event = &batch->ptr[i];
        switch (event->tag) {
        case WASMTUNE_POLICY_TYPES_EVENT_TCP_BUFFER_LIMIT:
            on_buffer_limit(&event->val.tcp_buffer_limit);
            break;
        case WASMTUNE_POLICY_TYPES_EVENT_ADMIN_OVERRIDE:
            on_admin_override(&event->val.admin_override);
            break;
        case WASMTUNE_POLICY_TYPES_EVENT_ADMIN_RELEASE:
            on_admin_release(&event->val.admin_release);
            break;
        case WASMTUNE_POLICY_TYPES_EVENT_NAMESPACE_CHANGE:
            on_namespace_change(&event->val.namespace_change);
            break;
        default:
            /* `lost` (always delivered) and nothing else: no other kind
             * was subscribed to. */
            break;
        }
    }
    /* The batch belongs to the callee. */
    exports_wasmtune_policy_handler_list_event_free(batch);
}

void exports_wasmtune_policy_handler_on_tick(exports_wasmtune_policy_handler_instant_ms_t now) {
    /* No tick was requested (tick_ms is none): nothing to do over time. */
    (void)now;
}

#endif /* GROW_RMEM_DECISION_ONLY */

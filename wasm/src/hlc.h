/* hlc.h: the hybrid logical clock: 48-bit milliseconds << 16 | 16-bit logical counter. */
#ifndef RINGKV_HLC_H
#define RINGKV_HLC_H

#include "util.h"

#define RK_HLC_LOGICAL_BITS 16u
#define RK_HLC_LOGICAL_MASK UINT64_C(0xFFFF)

static inline uint64_t rk_hlc_ms(uint64_t hlc) { return hlc >> RK_HLC_LOGICAL_BITS; }

/* The next HLC: max(clock + 1, now_ms << 16, floor + 1). The +1 carries from the logical
 * part into the milliseconds, so a burst inside one millisecond never wraps. Returns
 * RINGKV_E_CLOCK when the 48-bit milliseconds are exhausted. */
int rk_hlc_tick(uint64_t clock, uint64_t now_ms, uint64_t floor, uint64_t *out);

/* The highest HLC a node accepts from elsewhere at now_ms: (now + skew) ms, logical 0xFFFF. */
uint64_t rk_hlc_bound(uint64_t now_ms, uint64_t skew_ms);

/* The clock after seeing `remote`: absorbed only when within the bound. */
static inline uint64_t rk_hlc_absorb(uint64_t clock, uint64_t remote, uint64_t now_ms,
                                     uint64_t skew_ms) {
  if (remote <= rk_hlc_bound(now_ms, skew_ms) && remote > clock) return remote;
  return clock;
}

#endif

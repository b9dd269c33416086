/* hlc.c: the hybrid logical clock (see hlc.h). */
#include "hlc.h"

int rk_hlc_tick(uint64_t clock, uint64_t now_ms, uint64_t floor, uint64_t *out) {
  if (clock == UINT64_MAX || floor == UINT64_MAX || now_ms > RINGKV_HLC_MS_MAX) {
    return RINGKV_E_CLOCK;
  }
  uint64_t t = RK_MAX(clock + 1, now_ms << RK_HLC_LOGICAL_BITS);
  t = RK_MAX(t, floor + 1);
  *out = t;
  return RINGKV_OK;
}

uint64_t rk_hlc_bound(uint64_t now_ms, uint64_t skew_ms) {
  uint64_t ms = rk_add_sat(now_ms, skew_ms);
  if (ms > RINGKV_HLC_MS_MAX) return UINT64_MAX;
  return (ms << RK_HLC_LOGICAL_BITS) | RK_HLC_LOGICAL_MASK;
}

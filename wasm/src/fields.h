/* fields.h: the field loop every decoder in the core uses (node.c, control.c). */
#ifndef RINGKV_FIELDS_H
#define RINGKV_FIELDS_H

#include "pb.h"

/* Field loop over one message: `case N: ok = ...; break;` inside; unknown fields skip.
 * Needs `int t_` and `bool ok = true` in scope; stops at the first failed read. After a
 * nested loop, t_ holds the nested result until the outer loop reads its next tag. */
#define FIELDS(bytes)                                                           \
  for (pb_rd r_ = pb_reader(bytes), *once_ = &r_; once_ != NULL; once_ = NULL)  \
    for (uint32_t f_ = 0, wt_ = 0; ok && (t_ = pb_next(&r_, &f_, &wt_)) == 1;)  \
      switch (f_)
#define SKIP default: ok = pb_skip(&r_, wt_); break
#define R (&r_)
#define WT wt_

#endif

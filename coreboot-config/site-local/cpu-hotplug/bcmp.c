/* SPDX-License-Identifier: GPL-2.0-only */
/* Rust's core emits bcmp() for slice comparisons; coreboot only has memcmp(). */

#include <string.h>

int bcmp(const void *s1, const void *s2, size_t n);

int bcmp(const void *s1, const void *s2, size_t n)
{
	return memcmp(s1, s2, n);
}

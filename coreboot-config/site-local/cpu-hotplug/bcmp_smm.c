/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * bcmp() for the smm stage. Sources outside src/ get one object path for every stage, so
 * the smm stage (built with -D__SMM__) needs its own file, not a second listing of bcmp.c.
 */

#include "bcmp.c"

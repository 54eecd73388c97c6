/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The monotonic clock keygate measures steps, leases and timeouts with.
 */
#ifndef KG_TIME_H
#define KG_TIME_H

/* Milliseconds of CLOCK_MONOTONIC, with sub-millisecond fraction (step timings). */
double kg_mono_ms(void);

/* The same in whole milliseconds (deadlines, leases). */
long long kg_mono_ms_int(void);

#endif

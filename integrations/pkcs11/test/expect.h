/* SPDX-License-Identifier: Apache-2.0 */
/*
 * expect.h: the check the module's C test programs share. EXPECT(call, want) runs a PKCS#11
 * call and counts a failure (with the line and both return values on stderr) when it returns
 * other than want; the program exits non-zero iff failures is.
 */
#ifndef PALISADE_P11_TEST_EXPECT_H
#define PALISADE_P11_TEST_EXPECT_H

#include <stdio.h>

#include <p11-kit/pkcs11.h>

static int failures;

#define EXPECT(call, want)                                                                       \
	do {                                                                                     \
		CK_RV r_ = (call);                                                               \
		if (r_ != (want)) {                                                              \
			fprintf(stderr, "FAIL line %d: %s = %#lx, want %#lx\n", __LINE__, #call, r_, \
				(CK_RV)(want));                                                  \
			failures++;                                                              \
		}                                                                                \
	} while (0)

#endif

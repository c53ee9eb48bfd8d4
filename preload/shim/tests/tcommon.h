/* SPDX-License-Identifier: Apache-2.0 */
/* tcommon.h - tiny helpers for the shim's test programs. */
#ifndef FSS_TCOMMON_H
#define FSS_TCOMMON_H

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int t_failures;

#define T_CHECK(cond)							\
	do {								\
		if (!(cond)) {						\
			fprintf(stderr, "%s:%d: check failed: %s (errno %d %s)\n", \
				__FILE__, __LINE__, #cond, errno, strerror(errno)); \
			t_failures++;					\
		}							\
	} while (0)

/* A call that must succeed; exits at once if it does not. */
#define T_OK(expr)							\
	({								\
		__typeof__(expr) t_r_ = (expr);				\
		if (t_r_ < 0) {						\
			fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, \
				#expr, strerror(errno));		\
			exit(3);					\
		}							\
		t_r_;							\
	})

static inline int t_done(const char *name)
{
	if (t_failures) {
		fprintf(stderr, "%s: %d check(s) failed\n", name, t_failures);
		return 1;
	}
	printf("%s: ok\n", name);
	return 0;
}

#endif

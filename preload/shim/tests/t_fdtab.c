/* SPDX-License-Identifier: Apache-2.0 */
/*
 * t_fdtab.c - unit test of the ownership table and the socket object pool,
 * linked against fdtab.o and file_pool.o directly (no LD_PRELOAD).
 */
#include "tcommon.h"
#include "file.h"

static int released;

/* The real one (sock.c) talks to the daemon; here it only counts. */
void fss_file__release(struct fss_file *f)
{
	released++;
	fss_file__free(f);
}

/* Symbols the objects reference from the rest of the shim. */
FSS_TLS struct fss_tls fss_tls;

static void count_cb(int fd, struct fss_file *f, void *arg)
{
	(void)fd;
	(void)f;
	(*(int *)arg)++;
}

int main(void)
{
	struct fss_file *a, *b, *old;
	int n;

	/* empty table: nothing owned, anywhere, including past the end */
	T_CHECK(fss_fdtab__peek(0) == NULL);
	T_CHECK(fss_fdtab__peek(-1) == NULL);
	T_CHECK(fss_fdtab__peek(FSS_FDTAB_MAX) == NULL);
	T_CHECK(fss_fdtab__peek(1 << 30) == NULL);
	T_CHECK(!fss_fdtab__any());

	a = fss_file__alloc();
	b = fss_file__alloc();
	T_CHECK(a != NULL && b != NULL && a != b);
	T_CHECK(a->serial != b->serial);
	T_CHECK(atomic_load(&a->refs) == 1);

	/* install, look up, take a reference */
	T_CHECK(fss_fdtab__xchg(7, a, &old) == 0 && old == NULL);
	T_CHECK(fss_fdtab__any());
	T_CHECK(fss_fdtab__peek(7) == a);
	T_CHECK(fss_fdtab__peek(6) == NULL && fss_fdtab__peek(8) == NULL);
	T_CHECK(fss_file__get(7) == a && atomic_load(&a->refs) == 2);
	fss_file__put(a);

	/* dup: two entries, one object */
	fss_file__ref(a);
	T_CHECK(fss_fdtab__xchg(5000, a, &old) == 0 && old == NULL);	/* second page */
	T_CHECK(fss_fdtab__peek(5000) == a && atomic_load(&a->refs) == 2);
	n = 0;
	fss_fdtab__for_each(0, ~0u, count_cb, &n);
	T_CHECK(n == 2);
	n = 0;
	fss_fdtab__for_each(8, 4999, count_cb, &n);
	T_CHECK(n == 0);

	/* the highest fd the table holds, and one past it */
	T_CHECK(fss_fdtab__xchg(FSS_FDTAB_MAX - 1, b, &old) == 0 && old == NULL);
	T_CHECK(fss_fdtab__peek(FSS_FDTAB_MAX - 1) == b);
	T_CHECK(fss_fdtab__xchg(FSS_FDTAB_MAX, b, &old) == -EMFILE);

	/* close both fds of a: released once, on the last */
	T_CHECK(fss_fdtab__xchg(7, NULL, &old) == 0 && old == a);
	fss_file__put(old);
	T_CHECK(released == 0 && fss_fdtab__peek(7) == NULL && fss_file__get(7) == NULL);
	T_CHECK(fss_fdtab__xchg(5000, NULL, &old) == 0 && old == a);
	fss_file__put(old);
	T_CHECK(released == 1);

	/* a freed object is type-stable and refuses new references */
	T_CHECK(atomic_load(&a->refs) == 0);

	/* the pool recycles, with a new serial */
	{
		uint32_t s = a->serial;
		struct fss_file *c = fss_file__alloc();

		T_CHECK(c == a && c->serial != s);
		fss_file__put(c);
	}

	T_CHECK(fss_fdtab__xchg(FSS_FDTAB_MAX - 1, NULL, &old) == 0 && old == b);
	fss_file__put(b);
	T_CHECK(!fss_fdtab__any());
	T_CHECK(released == 3);
	return t_done("t_fdtab");
}

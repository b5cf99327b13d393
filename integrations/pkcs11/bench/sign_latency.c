/*
 * sign_latency: the time of one C_Sign of a PKCS#11 module, measured alone (no TLS, no web
 * server): the signature latency column of the web server benchmark (TestBenchNginx).
 *
 *   sign_latency MODULE LABEL ecdsa|rsa N [PIN]
 *
 * Signs a SHA-256 digest N times with the private key labelled LABEL (CKM_ECDSA, or
 * CKM_RSA_PKCS_PSS as TLS asks) in one session and prints "median_us mean_us".
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <p11-kit/pkcs11.h>

static int cmp(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

static double now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

int main(int argc, char **argv)
{
	CK_FUNCTION_LIST *f;
	CK_RV (*get)(CK_FUNCTION_LIST **);
	CK_SLOT_ID slots[16];
	CK_ULONG nslots = 16, found;
	CK_SESSION_HANDLE s;
	CK_OBJECT_HANDLE key;
	CK_OBJECT_CLASS cls = CKO_PRIVATE_KEY;
	CK_ATTRIBUTE tmpl[2];
	CK_RSA_PKCS_PSS_PARAMS pss = {CKM_SHA256, CKG_MGF1_SHA256, 32};
	CK_MECHANISM mech;
	unsigned char digest[32], sig[1024];
	CK_ULONG sig_len;
	double *t, sum = 0;
	void *h;
	int n, i;
	CK_ULONG si;

	if (argc < 5)
		return fprintf(stderr, "usage: %s MODULE LABEL ecdsa|rsa N [PIN]\n", argv[0]), 2;
	n = atoi(argv[4]);
	if (n < 1)
		return 2;
	h = dlopen(argv[1], RTLD_NOW);
	if (!h)
		return fprintf(stderr, "%s\n", dlerror()), 1;
	*(void **)&get = dlsym(h, "C_GetFunctionList");
	if (!get || get(&f) != CKR_OK || f->C_Initialize(NULL) != CKR_OK ||
	    f->C_GetSlotList(CK_TRUE, slots, &nslots) != CKR_OK || nslots == 0)
		return fprintf(stderr, "module set-up failed\n"), 1;
	tmpl[0] = (CK_ATTRIBUTE){CKA_CLASS, &cls, sizeof(cls)};
	tmpl[1] = (CK_ATTRIBUTE){CKA_LABEL, argv[2], strlen(argv[2])};
	for (si = 0; si < nslots; si++) {
		if (f->C_OpenSession(slots[si], CKF_SERIAL_SESSION, NULL, NULL, &s) != CKR_OK)
			continue;
		if (argc > 5)
			f->C_Login(s, CKU_USER, (unsigned char *)argv[5], strlen(argv[5]));
		if (f->C_FindObjectsInit(s, tmpl, 2) == CKR_OK && f->C_FindObjects(s, &key, 1, &found) == CKR_OK &&
		    f->C_FindObjectsFinal(s) == CKR_OK && found == 1)
			break;
		f->C_CloseSession(s);
	}
	if (si == nslots)
		return fprintf(stderr, "no private key labelled %s\n", argv[2]), 1;
	if (strcmp(argv[3], "rsa") == 0)
		mech = (CK_MECHANISM){CKM_RSA_PKCS_PSS, &pss, sizeof(pss)};
	else
		mech = (CK_MECHANISM){CKM_ECDSA, NULL, 0};
	memset(digest, 0x5a, sizeof(digest));
	t = calloc(n, sizeof(*t));
	if (!t)
		return 1;
	for (i = 0; i < n; i++) {
		double t0 = now_us();
		CK_RV rv;

		sig_len = sizeof(sig);
		rv = f->C_SignInit(s, &mech, key);
		if (rv == CKR_OK)
			rv = f->C_Sign(s, digest, sizeof(digest), sig, &sig_len);
		if (rv != CKR_OK)
			return fprintf(stderr, "C_Sign: 0x%lx\n", rv), 1;
		t[i] = now_us() - t0;
		sum += t[i];
	}
	qsort(t, n, sizeof(*t), cmp);
	printf("%.1f %.1f\n", t[n / 2], sum / n);
	f->C_CloseSession(s);
	f->C_Finalize(NULL);
	free(t);
	return 0;
}
